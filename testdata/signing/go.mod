module hoist.test/signing

go 1.22
