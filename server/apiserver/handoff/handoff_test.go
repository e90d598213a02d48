package handoff

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

func TestPooled(t *testing.T) {
	for _, c := range []struct {
		method  string
		major   int
		upgrade string
		want    bool
	}{
		{http.MethodPost, 2, "", true},
		{http.MethodPut, 2, "", true},
		{http.MethodPatch, 2, "", true},
		{http.MethodDelete, 2, "", true},
		{http.MethodGet, 2, "", false},
		{http.MethodHead, 2, "", false},
		{http.MethodOptions, 2, "", false},
		{http.MethodPost, 1, "", false},
		{http.MethodPost, 2, "websocket", false},
	} {
		r := httptest.NewRequest(c.method, "/api/v1/namespaces/default/configmaps", nil)
		r.ProtoMajor = c.major
		if c.upgrade != "" {
			r.Header.Set("Upgrade", c.upgrade)
		}
		if got := Pooled(r); got != c.want {
			t.Errorf("%s HTTP/%d upgrade %q: pooled %v, want %v", c.method, c.major, c.upgrade, got, c.want)
		}
	}
}

// goroutineID is the running goroutine's number, from its stack header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return string(bytes.Fields(buf)[1])
}

// TestWrapOverHTTP2: through a real HTTP/2 server, writes run on another
// goroutine than the server's handler goroutine and reads on that one;
// each gets its own response.
func TestWrapOverHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.EnableHTTP2 = true
	var outer, inner string
	chain := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner = goroutineID()
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(append([]byte(r.Method+" "), body...))
	}))
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outer = goroutineID()
		chain.ServeHTTP(w, r)
	})
	srv.StartTLS()
	defer srv.Close()
	for _, c := range []struct {
		method string
		pooled bool
	}{{http.MethodPost, true}, {http.MethodGet, false}, {http.MethodDelete, true}} {
		req, _ := http.NewRequest(c.method, srv.URL, strings.NewReader("x"))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Method") != c.method || string(body) != c.method+" x" {
			t.Errorf("%s: HTTP/%d %d %q %q", c.method, resp.ProtoMajor, resp.StatusCode, resp.Header.Get("X-Method"), body)
		}
		if (outer != inner) != c.pooled {
			t.Errorf("%s: handler goroutine %s, chain goroutine %s; want pooled %v", c.method, outer, inner, c.pooled)
		}
	}
	// A pooled chain that aborts resets the stream, as it would unpooled.
	if resp, err := srv.Client().Post(srv.URL+"/abort", "text/plain", strings.NewReader("x")); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("aborted POST: HTTP/%d %d %q, want a stream error", resp.ProtoMajor, resp.StatusCode, body)
	}
}

// TestWrapPanics: a pooled handler's panic reaches the caller:
// http.ErrAbortHandler as itself, anything else with the handler's stack.
func TestWrapPanics(t *testing.T) {
	for _, c := range []struct {
		name  string
		value any
		check func(any) bool
	}{
		{"abort", http.ErrAbortHandler, func(v any) bool { return v == http.ErrAbortHandler }}, //nolint:errorlint // the sentinel itself
		{"other", "boom", func(v any) bool {
			s, ok := v.(string)
			return ok && strings.HasPrefix(s, "boom\n") && strings.Contains(s, "panicky")
		}},
		{"nil", nil, func(v any) bool {
			s, ok := v.(string)
			return ok && strings.Contains(s, "panic called with nil argument") && strings.Contains(s, "panicky")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panicky(c.value) }))
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.ProtoMajor = 2
			got := func() (v any) {
				defer func() { v = recover() }()
				h.ServeHTTP(httptest.NewRecorder(), r)
				return nil
			}()
			if !c.check(got) {
				t.Errorf("caller recovered %v", got)
			}
		})
	}
}

//go:noinline
func panicky(v any) { panic(v) }

// TestWrapGoexit: a pooled handler that calls runtime.Goexit ends the
// caller's goroutine the same way, without it returning or panicking.
func TestWrapGoexit(t *testing.T) {
	h := Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { runtime.Goexit() }))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.ProtoMajor = 2
	outcome := make(chan string, 1)
	go func() {
		returned := false
		defer func() {
			switch v := recover(); {
			case v != nil:
				outcome <- fmt.Sprintf("panicked: %v", v)
			case returned:
				outcome <- "returned"
			default:
				outcome <- "goexit"
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), r)
		returned = true
	}()
	if got := <-outcome; got != "goexit" {
		t.Errorf("caller %s, want runtime.Goexit", got)
	}
}
