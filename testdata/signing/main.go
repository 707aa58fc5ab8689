// Command yokesig signs and verifies Wasm modules exactly as Yoke does (same key formats,
// algorithms, payload and custom section), using only Go's standard library. hoist's tests
// run it to prove that Go-signed modules verify in hoist and hoist-signed modules verify in Go.
//
// Written for hoist's tests from a reading of Yoke's behaviour; it is not Yoke's code.
//
//	yokesig sign PRIVATE.pem IN.wasm OUT.wasm
//	yokesig verify KEY.pem IN.wasm
//	yokesig fingerprint KEY.pem
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

const sectionName = "yoke.schematics:signature"

type payload struct {
	Fingerprint string
	Signature   []byte
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "yokesig:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: yokesig sign|verify|fingerprint ...")
	}
	switch args[0] {
	case "sign":
		if len(args) != 4 {
			return errors.New("usage: yokesig sign PRIVATE.pem IN.wasm OUT.wasm")
		}
		return sign(args[1], args[2], args[3])
	case "verify":
		if len(args) != 3 {
			return errors.New("usage: yokesig verify KEY.pem IN.wasm")
		}
		return verify(args[1], args[2])
	case "fingerprint":
		if len(args) != 2 {
			return errors.New("usage: yokesig fingerprint KEY.pem")
		}
		data, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		key, err := publicKey(data)
		if err != nil {
			return err
		}
		fp, err := fingerprint(key)
		if err != nil {
			return err
		}
		fmt.Println(fp)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func privateKey(data []byte) (crypto.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("unsupported private key type %q", block.Type)
}

func publicKey(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PRIVATE KEY", "PRIVATE KEY":
		k, err := privateKey(data)
		if err != nil {
			return nil, err
		}
		return k.(interface{ Public() crypto.PublicKey }).Public(), nil
	}
	return nil, fmt.Errorf("unsupported key type %q", block.Type)
}

func fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	var spki struct {
		Algorithm asn1.RawValue
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return "", err
	}
	sum := sha256.Sum256(spki.Key.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// split returns the module without the first signature section, and that section's data.
func split(wasm []byte) ([]byte, []byte, error) {
	if len(wasm) < 8 {
		return nil, nil, errors.New("not a wasm module")
	}
	out := append([]byte{}, wasm[:8]...)
	off := 8
	for off < len(wasm) {
		start := off
		id := wasm[off]
		off++
		size, n := binary.Uvarint(wasm[off:])
		if n <= 0 || uint64(len(wasm)-off-n) < size {
			return nil, nil, errors.New("malformed section")
		}
		off += n
		end := off + int(size)
		if id == 0 {
			nameLen, m := binary.Uvarint(wasm[off:end])
			if m <= 0 || uint64(end-off-m) < nameLen {
				return nil, nil, errors.New("malformed custom section")
			}
			name := string(wasm[off+m : off+m+int(nameLen)])
			if name == sectionName {
				data := wasm[off+m+int(nameLen) : end]
				out = append(out, wasm[end:]...)
				return out, data, nil
			}
		}
		out = append(out, wasm[start:end]...)
		off = end
	}
	return out, nil, nil
}

func sign(keyPath, in, outPath string) error {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	key, err := privateKey(keyPEM)
	if err != nil {
		return err
	}
	wasm, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	unsigned, existing, err := split(wasm)
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return errors.New("module is already signed")
	}
	digest := sha256.Sum256(unsigned)
	var sig []byte
	var pub crypto.PublicKey
	switch k := key.(type) {
	case *rsa.PrivateKey:
		pub = &k.PublicKey
		sig, err = rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest[:], nil)
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
		sig, err = ecdsa.SignASN1(rand.Reader, k, digest[:])
	case ed25519.PrivateKey:
		pub = k.Public()
		sig = ed25519.Sign(k, digest[:])
	default:
		return errors.New("unsupported key")
	}
	if err != nil {
		return err
	}
	fp, err := fingerprint(pub)
	if err != nil {
		return err
	}
	data, err := json.Marshal(payload{Fingerprint: fp, Signature: sig})
	if err != nil {
		return err
	}
	name := []byte(sectionName)
	var body []byte
	body = binary.AppendUvarint(body, uint64(len(name)))
	body = append(body, name...)
	body = append(body, data...)
	out := append(unsigned, 0)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, body...)
	return os.WriteFile(outPath, out, 0o644)
}

func verify(keyPath, in string) error {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	pub, err := publicKey(keyPEM)
	if err != nil {
		return err
	}
	fp, err := fingerprint(pub)
	if err != nil {
		return err
	}
	wasm, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	unsigned, data, err := split(wasm)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return errors.New("module is unsigned")
	}
	var p payload
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("invalid payload: %w", err)
	}
	if p.Fingerprint != fp {
		return errors.New("fingerprint does not match the key")
	}
	digest := sha256.Sum256(unsigned)
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPSS(k, crypto.SHA256, digest[:], p.Signature, nil); err != nil {
			return err
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest[:], p.Signature) {
			return errors.New("invalid signature")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, digest[:], p.Signature) {
			return errors.New("invalid signature")
		}
	default:
		return errors.New("unsupported key")
	}
	fmt.Println("verified", fp)
	return nil
}
