module hoist.test/gojs-probe

go 1.21
