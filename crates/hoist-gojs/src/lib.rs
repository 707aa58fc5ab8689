//! A host for Go's `GOOS=js GOARCH=wasm` ABI (import modules `gojs`, and `go` for Go < 1.21)
//! on wasmtime, with the JS object model the Go runtime and `syscall/js` need.
#![warn(missing_docs)]
