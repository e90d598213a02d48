package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{in: `verb="POST",resource="pods"`, want: map[string]string{"verb": "POST", "resource": "pods"}},
		{in: `a="x\"y,z=\"1\"",b=""`, want: map[string]string{"a": `x"y,z="1"`, "b": ""}},
		{in: `a="back\\slash"`, want: map[string]string{"a": `back\slash`}},
		{in: ``, want: map[string]string{}},
		{in: `a=x`, wantErr: true},
		{in: `a="x`, wantErr: true},
		{in: `="x"`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseLabels(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseLabels(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseLabels(%q) = %v, want %v", tt.in, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("parseLabels(%q)[%s] = %q, want %q", tt.in, k, got[k], v)
			}
		}
	}
}

func TestSLOPair(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"resource": "pods", "subresource": "binding", "verb": "POST", "scope": "resource"}, "mutating pods/binding POST"},
		{map[string]string{"resource": "leases", "verb": "PUT"}, "mutating leases PUT"},
		{map[string]string{"resource": "deployments", "verb": "APPLY"}, "mutating deployments APPLY"},
		{map[string]string{"resource": "pods", "verb": "GET", "scope": "resource"}, "read_resource pods"},
		{map[string]string{"resource": "pods", "verb": "LIST", "scope": "namespace"}, "read_namespace pods"},
		{map[string]string{"resource": "pods", "verb": "LIST", "scope": "cluster"}, "read_cluster pods"},
		{map[string]string{"resource": "pods", "verb": "WATCH", "scope": "cluster"}, ""},
		{map[string]string{"resource": "pods", "subresource": "log", "verb": "GET", "scope": "resource"}, ""},
		{map[string]string{"resource": "pods", "subresource": "exec", "verb": "POST"}, ""},
		{map[string]string{"resource": "", "verb": "GET"}, ""}, // /healthz, /metrics
		{map[string]string{"resource": "pods", "verb": "CONNECT"}, ""},
	}
	for _, tt := range tests {
		if got := sloPair(tt.labels); got != tt.want {
			t.Errorf("sloPair(%v) = %q, want %q", tt.labels, got, tt.want)
		}
	}
}

// hist builds a cumulative histogram with bounds 0.1, 0.5, 1, +Inf.
func hist(c ...float64) *histogram {
	return &histogram{bounds: []float64{0.1, 0.5, 1, math.Inf(1)}, counts: c}
}

func TestQuantile(t *testing.T) {
	tests := []struct {
		name      string
		a, b      *histogram
		q         float64
		want      float64
		wantCount float64
	}{
		// 100 requests, all under 0.1 s: interpolated within [0, 0.1].
		{name: "first bucket", b: hist(100, 100, 100, 100), q: 0.99, want: 0.099, wantCount: 100},
		// 100 requests: 50 under 0.1, 50 in (0.1, 0.5]; the 99th is at 49/50 of that bucket.
		{name: "interpolated", b: hist(50, 100, 100, 100), q: 0.99, want: 0.1 + 0.4*49.0/50, wantCount: 100},
		// The quantile beyond the last finite bound reports that bound.
		{name: "inf bucket", b: hist(0, 0, 0, 10), q: 0.99, want: 1, wantCount: 10},
		// Only the increase since a counts: a's 100 fast requests are gone.
		{name: "increase", a: hist(100, 100, 100, 100), b: hist(100, 100, 200, 200), q: 0.5, want: 0.75, wantCount: 100},
		{name: "nothing observed", a: hist(5, 5, 5, 5), b: hist(5, 5, 5, 5), q: 0.99, want: math.NaN()},
	}
	for _, tt := range tests {
		got, n := quantile(tt.q, tt.a, tt.b)
		if math.IsNaN(tt.want) {
			if !math.IsNaN(got) {
				t.Errorf("%s: quantile = %v, want NaN", tt.name, got)
			}
			continue
		}
		if math.Abs(got-tt.want) > 1e-9 || n != tt.wantCount {
			t.Errorf("%s: quantile = %v (%v requests), want %v (%v)", tt.name, got, n, tt.want, tt.wantCount)
		}
	}
}

// series renders one bucket line's key as scrape stores it.
func series(resource, verb, scope, le string) string {
	return sloMetric + `{component="apiserver",dry_run="",group="",resource="` + resource + `",scope="` + scope +
		`",subresource="",verb="` + verb + `",version="v1",le="` + le + `"}`
}

func TestSLOSamplerWorstWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// m returns a scrape where pods PUT has fast requests plus slow ones
	// (between 1 and 2 s), and pods GET only fast ones.
	m := func(fast, slow float64) metrics {
		out := metrics{}
		for _, le := range []struct {
			le string
			n  float64
		}{{"0.1", fast}, {"1", fast}, {"2", fast + slow}, {"+Inf", fast + slow}} {
			out[series("pods", "PUT", "resource", le.le)] = le.n
			out[series("pods", "GET", "resource", le.le)] = fast
		}
		out[`apiserver_request_duration_seconds_count{verb="PUT"}`] = fast + slow // ignored
		return out
	}
	s := &sloSampler{}
	s.add(t0, m(0, 0))
	s.add(t0.Add(2*time.Minute), m(1000, 0))
	// A burst of slow writes between minutes 2 and 4...
	s.add(t0.Add(4*time.Minute), m(2000, 100))
	// ...that the window ending at minute 10 no longer holds.
	s.add(t0.Add(10*time.Minute), m(10000, 100))
	st := s.stats()
	if st == nil {
		t.Fatal("stats = nil")
	}
	mut, ok := st.Classes[sloMutating]
	if !ok {
		t.Fatalf("no mutating class in %+v", st.Classes)
	}
	// Worst window: minutes 0-4 (2100 requests, 100 slow): the 99th
	// percentile (rank 2079) is in (1, 2]: 1 + (2079-2000)/100.
	if mut.Pair != "pods PUT" || math.Abs(mut.P99ms-1790) > 0.5 || mut.Count != 2100 || mut.Met {
		t.Errorf("mutating = %+v, want pods PUT p99 1790 ms over 2100 requests, not met", mut)
	}
	read := st.Classes[sloResource]
	if read.Pair != "pods" || read.P99ms > 100 || !read.Met {
		t.Errorf("read_resource = %+v, want pods under 100 ms, met", read)
	}
	if _, ok := st.Classes[sloCluster]; ok {
		t.Errorf("cluster class without cluster requests: %+v", st.Classes)
	}
	want := []sloAt{{EndS: 120, Pair: "pods PUT", P99ms: 99, Count: 1000}, {EndS: 240, Pair: "pods PUT", P99ms: 1790, Count: 2100}, {EndS: 600, Pair: "pods PUT", P99ms: 99, Count: 8000}}
	if !slices.Equal(st.Mutating, want) {
		t.Errorf("mutating by window = %+v, want %+v", st.Mutating, want)
	}
	if st.WindowS != 360 || st.Samples != 4 {
		t.Errorf("window %v s over %d samples, want 360 s (minutes 4-10) over 4", st.WindowS, st.Samples)
	}
}
