;; A command whose `_start` executes `unreachable`: the run must fail with a
;; trap (not an exit code), and hoist must report it as such.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    unreachable))
