//go:build js && wasm

// badfn is a KRM function (kpt's js/wasm glue: a global processResourceList) that misbehaves
// on purpose, for hoist's bad-input tests. The functionConfig's `data.mode` picks how (the last `mode:` of the input, as the
// functionConfig follows the items):
//
//	ok       returns its input unchanged
//	panic    panics
//	exit     writes to stderr and exits with code 3
//	loop     never returns
//	hog      allocates memory until the limit stops it
//	badyaml  returns text that is not YAML
//	notrl    returns a ConfigMap instead of a ResourceList
//	escape   moves every resource to ../escaped.yaml (out of its package)
package main

import (
	"fmt"
	"os"
	"regexp"
	"syscall/js"
)

var pathRe = regexp.MustCompile(`(config\.kubernetes\.io/path: ).*`)

func process(input string) string {
	mode := "ok"
	if all := regexp.MustCompile(`mode: "?(\w+)`).FindAllStringSubmatch(input, -1); len(all) > 0 {
		mode = all[len(all)-1][1]
	}
	fmt.Fprintf(os.Stderr, "badfn: mode %s\n", mode)
	switch mode {
	case "panic":
		panic("badfn was told to panic")
	case "exit":
		fmt.Fprintln(os.Stderr, "badfn: giving up")
		os.Exit(3)
	case "loop":
		n := 0
		for {
			n++
		}
	case "hog":
		var keep [][]byte
		for {
			keep = append(keep, make([]byte, 16<<20))
		}
	case "badyaml":
		return "items: [\n  - {unclosed"
	case "notrl":
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: not-a-resource-list\n"
	case "escape":
		return pathRe.ReplaceAllString(input, "${1}../escaped.yaml")
	}
	return input
}

func main() {
	js.Global().Set("processResourceList", js.FuncOf(func(this js.Value, args []js.Value) any {
		return process(args[0].String())
	}))
	js.Global().Set("processResourceListErrors", js.FuncOf(func(this js.Value, args []js.Value) any {
		return "badfn: no structured errors"
	}))
	select {}
}
