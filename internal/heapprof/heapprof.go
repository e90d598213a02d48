// Package heapprof decides whether a process samples its allocations for
// heap profiles. Go samples one allocation per 512 KB by default and keeps
// every sampled stack in a table it allocates on first use: a 1.4 MB hash
// array, touched at random, plus the buckets, ~1 MB of anonymous memory in
// every long-running process of the binary (measured on the idle API
// server) that only a heap profile reads. Skiff's processes sample only
// while something can serve a heap profile (the API server's
// --profiling), or when $GODEBUG sets memprofilerate, which always wins.
package heapprof

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

// GoDefaultRate is Go's default runtime.MemProfileRate.
const GoDefaultRate = 512 * 1024

// Off stops sampling unless $GODEBUG sets memprofilerate. Call it first
// thing in main: the table is allocated on the first sampled allocation.
func Off() {
	if !userSet() {
		runtime.MemProfileRate = 0
	}
}

// On restores Go's default sampling unless $GODEBUG set a rate. Profiles
// then cover allocations from this point on.
func On() {
	if !userSet() {
		runtime.MemProfileRate = GoDefaultRate
	}
}

func userSet() bool {
	for _, kv := range strings.Split(os.Getenv("GODEBUG"), ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "memprofilerate=") {
			return true
		}
	}
	return false
}

// FlagOn reports whether a boolean flag ends up true in args, given as
// --name, --name=value or -name=value; the last one wins, as with pflag.
// A value that is not a boolean does not count.
func FlagOn(args []string, name string) bool {
	on := false
	for _, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		n, v, hasValue := strings.Cut(a, "=")
		if n != name {
			continue
		}
		if !hasValue {
			on = true
			continue
		}
		if b, err := strconv.ParseBool(v); err == nil {
			on = b
		}
	}
	return on
}
