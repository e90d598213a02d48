package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

// startupProfile writes a CPU profile of the process's first seconds when
// $SKIFF_STARTUP_CPU_PROFILE names a file ($SKIFF_STARTUP_CPU_PROFILE_SECONDS,
// default 5): start-up is over before the API server's /debug/pprof exists.
func startupProfile() {
	path := os.Getenv("SKIFF_STARTUP_CPU_PROFILE")
	if path == "" {
		return
	}
	secs := 5
	if s := os.Getenv("SKIFF_STARTUP_CPU_PROFILE_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "skiff: $SKIFF_STARTUP_CPU_PROFILE_SECONDS %q: want a positive number of seconds\n", s)
			return
		}
		secs = n
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skiff: start-up profile:", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "skiff: start-up profile:", err)
		f.Close()
		return
	}
	time.AfterFunc(time.Duration(secs)*time.Second, func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
