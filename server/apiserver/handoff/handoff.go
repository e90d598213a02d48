// Package handoff runs the API server's handler chain for HTTP/2 writes
// on pooled goroutines whose stacks have grown already.
//
// The HTTP/2 server starts a goroutine per request. It begins with a small
// stack, and the filters in front of the timeout filter (audit init, panic
// recovery, request info, latency trackers, logging, the request deadline)
// grow it, copying the stack at each doubling: ~1.4% of the server's CPU
// under a create load, all in runtime.copystack under the HTTP/2 handler
// goroutine. The timeout filter and the finisher already run the rest of
// the request on pooled workers (k8s.io/apiserver/pkg/util/goroutinepool,
// a Skiff patch); this hands the whole chain to one too, so the HTTP/2
// goroutine only waits.
//
// Only HTTP/2 requests that change state (POST, PUT, PATCH, DELETE) are
// handed off: they are short and frequent. Reads are not, so a watch never
// holds a pooled worker and an idle server's watches keep one goroutine
// each; an HTTP/1.1 connection already serves its requests on one
// long-lived goroutine.
package handoff

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"

	"k8s.io/apiserver/pkg/util/goroutinepool"
)

// Wrap returns h, handing the requests Pooled selects to a pooled goroutine
// while the calling goroutine waits. A panic in h reaches the caller as
// the same value (http.ErrAbortHandler) or, for any other value, as a
// string with h's stack, as upstream's timeout filter passes it on; a
// runtime.Goexit in h ends the caller with runtime.Goexit too, so the
// HTTP/2 server resets the stream as it would have.
//
// The pool is Wrap's own: its workers run only the filters in front of
// the timeout filter, so the process's pool keeps the deeper stacks of
// the timeout filter's and the finisher's work for that work.
func Wrap(h http.Handler) http.Handler {
	pool := goroutinepool.New(goroutinepool.IdleTimeout)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Pooled(r) {
			h.ServeHTTP(w, r)
			return
		}
		done := make(chan any, 1)
		pool.Go(func() {
			returned := false
			defer func() {
				err := recover()
				switch {
				case err == nil && !returned:
					err = errGoexit
				case err != nil && err != http.ErrAbortHandler: //nolint:errorlint // the sentinel itself, as net/http compares it
					buf := make([]byte, 64<<10)
					err = fmt.Sprintf("%v\n%s", err, buf[:runtime.Stack(buf, false)])
				}
				done <- err
			}()
			h.ServeHTTP(w, r)
			returned = true
		})
		switch err := <-done; err {
		case nil:
		case errGoexit:
			runtime.Goexit()
		default:
			panic(err)
		}
	})
}

// errGoexit is what a pooled h that called runtime.Goexit hands back.
var errGoexit = errors.New("handler called runtime.Goexit")

// Pooled reports whether Wrap hands r to a pooled goroutine: an HTTP/2
// request with a method that changes state and no upgrade.
func Pooled(r *http.Request) bool {
	if r.ProtoMajor != 2 || r.Header.Get("Upgrade") != "" {
		return false
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
