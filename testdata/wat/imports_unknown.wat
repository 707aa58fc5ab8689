;; A command module that imports a function no host provides (env.mystery).
;; Instantiation must fail with an error that names the missing import.
(module
  (import "env" "mystery" (func $mystery (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $mystery (i32.const 42)))))
