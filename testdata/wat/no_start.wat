;; A WASI module that is not a command: it imports WASI and exports memory, but
;; has no `_start` export. Running it as a flight must fail with a clear error.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "main")
    (call $proc_exit (i32.const 0))))
