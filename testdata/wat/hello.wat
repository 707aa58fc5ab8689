;; A minimal WASI command: it writes one JSON ConfigMap (and a newline) to
;; stdout with a single fd_write, then returns from `_start` (exit code 0,
;; without calling proc_exit).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; The output, 92 bytes, at offset 64.
  (data (i32.const 64)
    "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"hello\"},\"data\":{\"hello\":\"world\"}}\n")
  ;; One iovec at offset 0: { buf = 64, len = 92 }; bytes written go to offset 8.
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 92))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
