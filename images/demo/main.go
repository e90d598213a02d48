// Command demo is Skiff's demo web server (image skiff.local/demo): it
// answers every request with the pod's name, its IP addresses and the
// request's headers, serves /healthz, logs one line per request, and has
// switches that make it misbehave on purpose for tests: failing health
// checks, burning memory, exiting.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "tar":
		os.Exit(tarMain(os.Args[1:]))
	case "rm":
		os.Exit(rmMain(os.Args[1:]))
	}
	listen := flag.String("listen", ":8080", "address to serve on")
	failHealth := flag.Bool("fail-healthz", false, "answer /healthz with 500")
	failAfter := flag.Duration("fail-healthz-after", 0, "start failing /healthz after this long (0: never)")
	burnMB := flag.Int("burn-memory-mb", 0, "allocate and touch this many MiB at start, 1 MiB every 10 ms")
	exitAfter := flag.Duration("exit-after", 0, "exit after this long (0: never)")
	exitCode := flag.Int("exit-code", 1, "exit code for --exit-after")
	flag.Parse()

	log.SetFlags(0)
	start := time.Now()
	var healthy atomic.Bool
	healthy.Store(!*failHealth)
	if *failAfter > 0 {
		time.AfterFunc(*failAfter, func() { healthy.Store(false) })
	}
	if *exitAfter > 0 {
		time.AfterFunc(*exitAfter, func() {
			log.Printf("exiting with code %d as asked", *exitCode)
			os.Exit(*exitCode)
		})
	}
	if *burnMB > 0 {
		go burn(*burnMB)
	}
	name, _ := os.Hostname()
	if n := os.Getenv("POD_NAME"); n != "" {
		name = n
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "unhealthy (as asked)", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/healthz/fail", func(w http.ResponseWriter, r *http.Request) {
		healthy.Store(false)
		fmt.Fprintln(w, "healthz now fails")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pod: %s\n", name)
		for _, ip := range addrs() {
			fmt.Fprintf(w, "ip: %s\n", ip)
		}
		fmt.Fprintf(w, "uptime: %s\n", time.Since(start).Round(time.Second))
		fmt.Fprintf(w, "uid: %d gid: %d\n", os.Getuid(), os.Getgid())
		fmt.Fprintf(w, "request: %s %s %s from %s\n", r.Method, r.Host, r.URL.RequestURI(), r.RemoteAddr)
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range r.Header[k] {
				fmt.Fprintf(w, "header: %s: %s\n", k, v)
			}
		}
	})
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s %s from %s", time.Now().UTC().Format(time.RFC3339), r.Method, r.URL.RequestURI(), r.RemoteAddr)
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: *listen, Handler: logged, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		s := <-sigs
		log.Printf("got %s, shutting down", s)
		srv.Close()
	}()
	log.Printf("demo %s serving on %s", name, *listen)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func addrs() []string {
	var out []string
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			out = append(out, n.IP.String())
		}
	}
	return out
}

// burn allocates mb MiB and keeps it, writing every page so it counts.
func burn(mb int) {
	var keep [][]byte
	for i := 0; i < mb; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(j)
		}
		keep = append(keep, b)
		if i%64 == 0 {
			log.Printf("burned %d MiB", i)
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Printf("burned %d MiB, holding", mb)
	for {
		time.Sleep(time.Hour)
		_ = keep
	}
}
