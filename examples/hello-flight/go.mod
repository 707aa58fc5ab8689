module hoist.example/hello-flight

go 1.26.0
