package bolt

import "testing"

func TestMappingEnd(t *testing.T) {
	const maps = `00400000-04ed9000 r-xp 00000000 fd:01 123 /usr/bin/skiff
7f3f45400000-7f3f46400000 r--s 00000000 fe:00 99 /var/lib/skiff/server/db/state.db
7f3f46400000-7f3f46600000 rw-p 00000000 00:00 0
7f3f46600000-7f3f46700000 rw-s 00000000 fe:00 98 /some/shared/file
7f3f46700000-7f3f46600000 r--s 00000000 fe:00 97 /backwards
`
	tests := []struct {
		start   uintptr
		want    uintptr
		wantErr bool
	}{
		{start: 0x7f3f45400000, want: 0x7f3f46400000},
		{start: 0x7f3f46400000, wantErr: true}, // anonymous, writable
		{start: 0x7f3f46600000, wantErr: true}, // writable shared mapping
		{start: 0x7f3f46700000, wantErr: true}, // end before start
		{start: 0x400000, wantErr: true},       // private code
		{start: 0x1000, wantErr: true},         // no such mapping
	}
	for _, tt := range tests {
		got, err := mappingEnd([]byte(maps), tt.start)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("mappingEnd(%#x) = %#x, %v; want %#x, error %v", tt.start, got, err, tt.want, tt.wantErr)
		}
	}
}
