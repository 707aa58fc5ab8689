// Command opa-build is the `opa build -t wasm` subset the policy fixtures need, built from
// OPA's own compile package (github.com/open-policy-agent/opa v1.22.4, the version the opa
// CLI fixture uses) without the rest of the opa CLI (server, plugins, telemetry), so a cold
// CI machine compiles far less. It takes the options build-kubewarden-policies and
// scripts/test.d/policy.sh pass, with the opa CLI's defaults for everything else:
//
//	opa-build build [--v0-compatible] -t wasm -e ENTRYPOINT -o BUNDLE.tar.gz PATH...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/compile"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "opa-build: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "build" {
		return fmt.Errorf("only `build` is supported (got %q)", strings.Join(args, " "))
	}
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	v0 := fs.Bool("v0-compatible", false, "Rego v0 syntax")
	target := fs.String("t", "wasm", "target (only wasm)")
	entrypoint := fs.String("e", "", "entrypoint")
	output := fs.String("o", "bundle.tar.gz", "output bundle")
	// The opa CLI accepts flags after the paths too: move them first.
	var flags, paths []string
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--v0-compatible":
			flags = append(flags, a)
		case a == "-t" || a == "-e" || a == "-o" || a == "--target" || a == "--entrypoint" || a == "--output":
			if i+1 >= len(rest) {
				return fmt.Errorf("%s needs a value", a)
			}
			name := map[string]string{"--target": "-t", "--entrypoint": "-e", "--output": "-o"}[a]
			if name == "" {
				name = a
			}
			flags = append(flags, name, rest[i+1])
			i++
		case strings.HasPrefix(a, "-"):
			return fmt.Errorf("unsupported flag %s (this is not the full opa CLI)", a)
		default:
			paths = append(paths, a)
		}
	}
	if err := fs.Parse(flags); err != nil {
		return err
	}
	if *target != compile.TargetWasm {
		return fmt.Errorf("only -t wasm is supported")
	}
	if *entrypoint == "" {
		return fmt.Errorf("wasm compilation requires at least one entrypoint")
	}
	version := ast.DefaultRegoVersion
	if *v0 {
		version = ast.RegoV0
	}
	out, err := os.Create(*output)
	if err != nil {
		return err
	}
	defer out.Close()
	compiler := compile.New().
		WithCapabilities(ast.CapabilitiesForThisVersion(ast.CapabilitiesRegoVersion(version))).
		WithTarget(compile.TargetWasm).
		WithOutput(out).
		WithEntrypoints(*entrypoint).
		WithRegoAnnotationEntrypoints(true).
		WithPaths(paths...).
		WithFilter(func(abspath string, info os.FileInfo, _ int) bool {
			return !info.IsDir() && strings.HasSuffix(abspath, ".tar.gz")
		}).
		WithRegoVersion(version)
	if err := compiler.Build(context.Background()); err != nil {
		return err
	}
	return out.Close()
}
