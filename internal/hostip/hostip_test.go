package hostip

import "testing"

func TestIsLoopbackURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"https://127.0.0.1:6443", true},
		{"https://127.0.0.2:6443", true},
		{"https://[::1]:6443", true},
		{"https://[::ffff:127.0.0.1]:6443", true},
		{"https://localhost:6443", true},
		{"https://10.0.0.5:6443", false},
		{"https://[fd00::1]:6443", false},
		{"https://server.example:6443", false},
		{"https://localhost.example:6443", false},
		{"::not a url", false},
		{"", false},
	} {
		if got := IsLoopbackURL(tc.url); got != tc.want {
			t.Errorf("IsLoopbackURL(%q) = %v, want %v", tc.url, got, tc.want)
		}
	}
}
