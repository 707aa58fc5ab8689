module hoist.test/atc

go 1.24
