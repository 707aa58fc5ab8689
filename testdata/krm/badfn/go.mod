module hoist.dev/testdata/krm/badfn

go 1.21
