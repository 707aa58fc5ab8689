// Command echo is a test flight that reports exactly what it was given.
//
// It emits one ConfigMap named after argv[0] (the release name) in namespace
// $NAMESPACE. Its data holds:
//
//	args   JSON array of os.Args, compact (e.g. ["rel","--format","yaml"])
//	env    JSON array of os.Environ(), compact, in the order the host gave
//	       (so tests can assert the exact set)
//	stdin  the full stdin, verbatim
//	NAME   one key per environment variable NAME, holding its value
//
// Flags (all optional, anywhere in the arguments; unknown arguments are ignored
// and only recorded in "args"):
//
//	--format json|yaml  output format (default json)
//	--stages N          emit N stages as a JSON array of arrays; the first stage
//	                    holds a Namespace and the ConfigMap, stage i>1 holds a
//	                    ConfigMap "<name>-stage-<i>"
//	--stderr TEXT       write TEXT and a newline to stderr
//	--exit N            exit with code N after writing the output
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

type object = map[string]any

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run() error {
	name := "echo"
	if len(os.Args) > 0 && os.Args[0] != "" {
		name = os.Args[0]
	}
	namespace := os.Getenv("NAMESPACE")

	format := "json"
	stages := 0
	exitCode := 0
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		flag, value, hasValue := strings.Cut(args[i], "=")
		takeValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", flag)
			}
			i++
			return args[i], nil
		}
		switch flag {
		case "--format":
			v, err := takeValue()
			if err != nil {
				return err
			}
			if v != "json" && v != "yaml" {
				return fmt.Errorf("--format must be json or yaml, not %q", v)
			}
			format = v
		case "--stages":
			v, err := takeValue()
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return fmt.Errorf("--stages must be a positive integer, not %q", v)
			}
			stages = n
		case "--stderr":
			v, err := takeValue()
			if err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, v)
		case "--exit":
			v, err := takeValue()
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("--exit must be an integer, not %q", v)
			}
			exitCode = n
		}
	}

	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}

	argsJSON, err := marshalCompact(os.Args)
	if err != nil {
		return err
	}
	environ := os.Environ()
	envJSON, err := marshalCompact(environ)
	if err != nil {
		return err
	}
	data := map[string]string{
		"args":  string(argsJSON),
		"env":   string(envJSON),
		"stdin": string(stdin),
	}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if validKey(k) {
			if _, taken := data[k]; !taken {
				data[k] = v
			}
		}
	}
	configMap := newConfigMap(name, namespace, data)

	var out []byte
	switch {
	case stages > 0:
		nsName := namespace
		if nsName == "" {
			nsName = name
		}
		all := [][]object{{
			{"apiVersion": "v1", "kind": "Namespace", "metadata": object{"name": nsName}},
			configMap,
		}}
		for i := 2; i <= stages; i++ {
			all = append(all, []object{newConfigMap(
				fmt.Sprintf("%s-stage-%d", name, i), namespace,
				map[string]string{"stage": strconv.Itoa(i)},
			)})
		}
		out, err = marshal(all)
	case format == "yaml":
		out, err = configMapYAML(name, namespace, data)
	default:
		out, err = marshal(configMap)
	}
	if err != nil {
		return err
	}
	if _, err := os.Stdout.Write(out); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	if exitCode != 0 {
		os.Exit(exitCode)
	}
	return nil
}

func newConfigMap(name, namespace string, data map[string]string) object {
	meta := object{"name": name}
	if namespace != "" {
		meta["namespace"] = namespace
	}
	return object{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
}

// marshal encodes v as indented JSON without HTML escaping, ending in a newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encoding output: %w", err)
	}
	return buf.Bytes(), nil
}

// configMapYAML writes the ConfigMap as YAML by hand. Every scalar is a
// double-quoted JSON string, which is also a valid YAML double-quoted scalar.
func configMapYAML(name, namespace string, data map[string]string) ([]byte, error) {
	quote := func(s string) string {
		b, _ := marshalCompact(s)
		return string(b)
	}
	var b strings.Builder
	b.WriteString("# rendered by the echo test flight\n")
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n")
	b.WriteString("  name: " + quote(name) + "\n")
	if namespace != "" {
		b.WriteString("  namespace: " + quote(namespace) + "\n")
	}
	b.WriteString("data:\n")
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString("  " + quote(k) + ": " + quote(data[k]) + "\n")
	}
	return []byte(b.String()), nil
}

func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// validKey reports whether k is a valid ConfigMap data key ([-._a-zA-Z0-9]+).
func validKey(k string) bool {
	if k == "" || len(k) > 253 {
		return false
	}
	for _, c := range k {
		ok := c == '-' || c == '.' || c == '_' ||
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}
