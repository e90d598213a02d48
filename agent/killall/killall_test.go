package killall

import "testing"

func TestUnescape(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"/var/lib/skiff", "/var/lib/skiff"},
		{`/mnt/my\040disk`, "/mnt/my disk"},
		{`/a\011b`, "/a\tb"},
		{`/a\012b`, "/a\nb"},
		{`/a\134b`, `/a\b`},
		{`\040`, " "},
		{`/end\040`, "/end "},
		{`\040\040`, "  "},
		{`/x\040y\011z`, "/x y\tz"},
		{`/a\134040`, `/a\040`}, // an escaped backslash is not re-read as an escape
		// Not escapes: kept verbatim.
		{`/trailing\`, `/trailing\`},
		{`/short\04`, `/short\04`},
		{`/a\9zz`, `/a\9zz`},
		{`/a\08a`, `/a\08a`},
		{`/big\777`, `/big\777`}, // > 0xff
		{`/a\xyz`, `/a\xyz`},
	}
	for _, tt := range tests {
		if got := unescape(tt.in); got != tt.want {
			t.Errorf("unescape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
