// Command lookup is a test flight that calls Yoke's host functions (import
// module "host") and records what came back:
//
//	lookup [lookup NAME NAMESPACE KIND APIVERSION]   -> host.k8s_lookup
//	lookup mapping GROUP_OR_APIVERSION KIND          -> host.k8s_rest_mapping
//
// With no arguments it looks up ConfigMap argv[0] in $NAMESPACE. It emits one
// ConfigMap named argv[0] in $NAMESPACE whose data holds:
//
//	call    "lookup" or "mapping"
//	args    JSON array of the call's string arguments
//	state   the u32 state the host wrote at statePtr, in decimal ("0" ok,
//	        "1" feature not granted, "2" error, "3" not found,
//	        "4" unauthenticated, "5" forbidden)
//	result  the returned buffer as a string (JSON on success, else the message)
//	buffer  the returned packed i64 in hex (0 means an empty result)
//
// ABI, as in Yoke: string arguments are packed (ptr << 32) | len in an i64;
// the result is a packed ptr/len buffer that the host allocated by calling
// the exported malloc(size i32) -> i64.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"
)

//go:wasmimport host k8s_lookup
func hostLookup(statePtr uint32, name, namespace, kind, apiVersion uint64) uint64

//go:wasmimport host k8s_rest_mapping
func hostRestMapping(statePtr uint32, groupOrAPIVersion, kind uint64) uint64

// heap keeps every buffer handed out by malloc reachable (the garbage collector
// must not free memory the host is writing into), keyed by its packed ptr/len.
var heap = map[uint64][]byte{}

//go:wasmexport malloc
func malloc(size uint32) uint64 {
	if size == 0 {
		return 0
	}
	buf := make([]byte, size)
	packed := uint64(uintptr(unsafe.Pointer(&buf[0])))<<32 | uint64(size)
	heap[packed] = buf
	return packed
}

// pack returns the packed (ptr << 32) | len form of s. The caller keeps s alive.
func pack(s string) uint64 {
	if len(s) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.StringData(s))))<<32 | uint64(len(s))
}

// state lives on the heap (a package variable) so its address stays valid
// while the host runs, whatever happens to goroutine stacks meanwhile.
var state = new(uint32)

func main() {
	name := "lookup"
	if len(os.Args) > 0 && os.Args[0] != "" {
		name = os.Args[0]
	}
	namespace := os.Getenv("NAMESPACE")

	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"lookup", name, namespace, "ConfigMap", "v1"}
	}

	var call string
	var callArgs []string
	var buffer uint64
	*state = 0
	statePtr := uint32(uintptr(unsafe.Pointer(state)))
	switch {
	case args[0] == "lookup" && len(args) == 5:
		call, callArgs = "lookup", args[1:]
		buffer = hostLookup(statePtr, pack(args[1]), pack(args[2]), pack(args[3]), pack(args[4]))
	case args[0] == "mapping" && len(args) == 3:
		call, callArgs = "mapping", args[1:]
		buffer = hostRestMapping(statePtr, pack(args[1]), pack(args[2]))
	default:
		fmt.Fprintln(os.Stderr, "usage: lookup NAME NAMESPACE KIND APIVERSION | mapping GROUP_OR_APIVERSION KIND")
		os.Exit(2)
	}
	runtime.KeepAlive(args)

	var result string
	if buffer != 0 {
		buf, ok := heap[buffer]
		if !ok {
			fmt.Fprintf(os.Stderr, "lookup: host returned buffer %#x that malloc did not hand out\n", buffer)
			os.Exit(4)
		}
		result = string(buf)
		delete(heap, buffer)
	}

	argsJSON, _ := json.Marshal(callArgs)
	meta := map[string]any{"name": name}
	if namespace != "" {
		meta["namespace"] = namespace
	}
	out := map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   meta,
		"data": map[string]string{
			"call":   call,
			"args":   string(argsJSON),
			"state":  strconv.FormatUint(uint64(*state), 10),
			"result": result,
			"buffer": fmt.Sprintf("%#x", buffer),
		},
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "lookup: writing output:", err)
		os.Exit(1)
	}
}
