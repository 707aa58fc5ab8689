// gcr-yoke reproduces, with go-containerregistry (the library the yoke CLI uses), what
// `yoke stow` pushes and what yoke's OCI pull accepts. hoist's tests use it as an
// independent producer/consumer of Yoke's OCI format while the real yoke CLI cannot be built.
//
//	gcr-yoke stow FILE REGISTRY/REPO:TAG   push like yoke stow (tags: TAG, latest, sha256_<hex>)
//	gcr-yoke pull REGISTRY/REPO:TAG OUT    pull like yoke (config type check, first wasm layer, gunzip)
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	yokeConfig = "application/vnd.yoke.config.v1+json"
	yokeLayer  = "application/vnd.yoke.wasm.gzip"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: gcr-yoke stow FILE REF | gcr-yoke pull REF OUT")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "stow":
		err = stow(os.Args[2], os.Args[3])
	case "pull":
		err = pull(os.Args[2], os.Args[3])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gcr-yoke:", err)
		os.Exit(1)
	}
}

func stow(file, ref string) error {
	wasm, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(wasm); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), yokeConfig)
	img, err = mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(buf.Bytes(), yokeLayer)})
	if err != nil {
		return err
	}
	if err := crane.Push(img, parsed.String(), crane.Insecure); err != nil {
		return err
	}
	sum := sha256.Sum256(wasm)
	for _, tag := range []string{"latest", "sha256_" + hex.EncodeToString(sum[:])} {
		if err := crane.Tag(parsed.String(), tag, crane.Insecure); err != nil {
			return err
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Println(parsed.Context().Digest(digest.String()).String())
	return nil
}

func pull(ref, out string) error {
	raw, err := crane.Manifest(ref, crane.Insecure)
	if err != nil {
		return err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	if string(m.Config.MediaType) != yokeConfig {
		return fmt.Errorf("config media type %q is not %q", m.Config.MediaType, yokeConfig)
	}
	for _, l := range m.Layers {
		if string(l.MediaType) != yokeLayer {
			continue
		}
		parsed, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			return err
		}
		layer, err := crane.PullLayer(parsed.Context().Name()+"@"+l.Digest.String(), crane.Insecure)
		if err != nil {
			return err
		}
		rc, err := layer.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		zr, err := gzip.NewReader(rc)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return err
		}
		return os.WriteFile(out, data, 0o644)
	}
	return fmt.Errorf("no %s layer", yokeLayer)
}
