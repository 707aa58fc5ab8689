//go:build js && wasm

// gojs-probe exercises hoist's Go js/wasm host from the Go side: it registers global functions
// whose behaviour the host's tests check (re-entrant fs writes from a handler, memory growth
// during a call, JS exceptions surfacing as js.Error, timers, values and their ids, exit).
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall/js"
	"time"
)

func main() {
	// A timer before anything is registered: the host must run the event loop (or Go's
	// scheduler) for main to get past this.
	time.Sleep(20 * time.Millisecond)
	if len(os.Args) > 1 && os.Args[1] == "command" {
		// Command style: echo stdin upper-cased to stdout, a note to stderr, exit 3.
		buf := make([]byte, 0, 1024)
		chunk := make([]byte, 7)
		for {
			n, err := os.Stdin.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if err != nil || n == 0 {
				break
			}
		}
		fmt.Fprint(os.Stdout, strings.ToUpper(string(buf)))
		fmt.Fprintln(os.Stderr, "command done")
		os.Exit(3)
	}

	g := js.Global()
	// State that carries over from call to call (a Go global and a JS object Go keeps a
	// reference to): a restored snapshot must reset both.
	count := 0
	last := js.Undefined()
	g.Set("counter", js.FuncOf(func(this js.Value, args []js.Value) any {
		count++
		prev := "none"
		if !last.IsUndefined() {
			prev = last.Get("arg").String()
		}
		o := js.Global().Get("Object").New()
		o.Set("arg", args[0])
		last = o
		js.Global().Set("lastCounter", o)
		fmt.Fprintf(os.Stderr, "counter %d\n", count)
		return fmt.Sprintf("%d:%s:%s", count, args[0].String(), prev)
	}))
	g.Set("echo", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Writes to stdout and stderr from inside a handler re-enter the host (fs.write
		// calls back into Go synchronously).
		fmt.Println("to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
		return "echo:" + args[0].String()
	}))
	g.Set("grow", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Grow memory by tens of MiB during the call, then return a large string built from
		// the argument: stale memory views would corrupt it.
		n := args[0].Int()
		blocks := make([][]byte, 0, n)
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			b[i%len(b)] = byte(i)
			blocks = append(blocks, b)
		}
		fmt.Fprintf(os.Stderr, "allocated %d MiB\n", len(blocks))
		return strings.Repeat(args[1].String(), 1000)
	}))
	g.Set("throws", js.FuncOf(func(this js.Value, args []js.Value) (result any) {
		// A JS method that throws (process.umask is ENOSYS here, as in wasm_exec.js);
		// Go sees a js.Error.
		defer func() {
			if r := recover(); r != nil {
				if e, ok := r.(js.Error); ok {
					result = "caught: " + e.Error()
					return
				}
				result = fmt.Sprint("other panic: ", r)
			}
		}()
		js.Global().Get("process").Call("umask", 0)
		return "not thrown"
	}))
	g.Set("values", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Round trips through the value model: objects, arrays, byte arrays, numbers, bools.
		o := js.Global().Get("Object").New()
		o.Set("n", 1.5)
		o.Set("b", true)
		o.Set("s", "str")
		arr := js.ValueOf([]any{1, "two", nil, false})
		u := js.Global().Get("Uint8Array").New(4)
		js.CopyBytesToJS(u, []byte{1, 2, 3, 250})
		back := make([]byte, 4)
		js.CopyBytesToGo(back, u)
		ok := u.InstanceOf(js.Global().Get("Uint8Array")) && !o.InstanceOf(js.Global().Get("Uint8Array"))
		same := o.Equal(o) && !o.Equal(js.Global().Get("Object").New())
		return fmt.Sprintf("n=%v b=%v s=%v len=%d a1=%s a2=%v a3=%v bytes=%v inst=%v same=%v type=%s pid=%d",
			o.Get("n").Float(), o.Get("b").Bool(), o.Get("s").String(), arr.Length(),
			arr.Index(1).String(), arr.Index(2).IsNull(), arr.Index(3).Bool(), back, ok, same,
			js.Global().Get("echo").Type().String(), os.Getpid())
	}))
	g.Set("sleepy", js.FuncOf(func(this js.Value, args []js.Value) any {
		// A timer inside a call: Go's scheduler waits on nanotime without returning.
		start := time.Now()
		time.Sleep(30 * time.Millisecond)
		return fmt.Sprintf("slept %v", time.Since(start) >= 30*time.Millisecond)
	}))
	g.Set("panics", js.FuncOf(func(this js.Value, args []js.Value) any {
		panic("probe panic: " + args[0].String())
	}))
	g.Set("spin", js.FuncOf(func(this js.Value, args []js.Value) any {
		x := 0
		for {
			x++
		}
	}))
	g.Set("hoard", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Keeps args[0] JS arrays of args[1] items (Uint8Arrays of args[1] bytes when args[2]
		// is true): host memory that the limit on Go's linear memory does not see.
		class := "Array"
		if args[2].Bool() {
			class = "Uint8Array"
		}
		kept := make([]js.Value, 0, args[0].Int())
		for i := 0; i < args[0].Int(); i++ {
			kept = append(kept, js.Global().Get(class).New(args[1].Int()))
		}
		return len(kept)
	}))
	g.Set("hoardStrings", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Keeps args[0] distinct JS strings of args[1] bytes each, made from Go strings.
		kept := make([]js.Value, 0, args[0].Int())
		for i := 0; i < args[0].Int(); i++ {
			s := strconv.Itoa(i) + strings.Repeat("s", args[1].Int())
			kept = append(kept, js.ValueOf(s))
		}
		return len(kept)
	}))
	g.Set("hoardNames", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Sets args[0] properties with names of args[1] bytes each on one object, then
		// deletes them all when args[2] is true.
		o := js.Global().Get("Object").New()
		for i := 0; i < args[0].Int(); i++ {
			o.Set(strconv.Itoa(i)+strings.Repeat("n", args[1].Int()), i)
		}
		if args[2].Bool() {
			for i := 0; i < args[0].Int(); i++ {
				o.Delete(strconv.Itoa(i) + strings.Repeat("n", args[1].Int()))
			}
		}
		return args[0].Int()
	}))
	g.Set("stretch", js.FuncOf(func(this js.Value, args []js.Value) any {
		// One array grown an item at a time by assignment past its end.
		a := js.Global().Get("Array").New()
		for i := 0; i < args[0].Int(); i++ {
			a.SetIndex(i, i)
		}
		return a.Length()
	}))
	g.Set("cycles", js.FuncOf(func(this js.Value, args []js.Value) any {
		// Makes args[0] rings the host's reference counting cannot free: two objects that
		// hold each other, and an array of args[1] items that holds itself. The last ring's
		// object is kept as the global "lastRing"; the others are dropped by Go.
		var a js.Value
		for i := 0; i < args[0].Int(); i++ {
			a = js.Global().Get("Object").New()
			b := js.Global().Get("Object").New()
			a.Set("b", b)
			b.Set("a", a)
			arr := js.Global().Get("Array").New(args[1].Int())
			arr.SetIndex(0, arr)
			b.Set("arr", arr)
		}
		js.Global().Set("lastRing", a)
		return args[0].Int()
	}))
	g.Set("exits", js.FuncOf(func(this js.Value, args []js.Value) any {
		os.Exit(args[0].Int())
		return nil
	}))
	select {}
}
