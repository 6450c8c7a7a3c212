package keys

import (
	"context"
	"testing"
)

// BenchmarkSnapshot measures the reads every token response and every token verification makes —
// SigningKey, PublicKeys, Algorithms — from many goroutines at once. They load the immutable
// snapshot through an atomic pointer and check it against the clock (one time.Now); no lock and no
// store access, so the figure should stay in nanoseconds and must not grow with the goroutines.
func BenchmarkSnapshot(b *testing.B) {
	store := &memStore{}
	s, err := Open(context.Background(), store, Config{Algorithm: EdDSA, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	active, opened := s.SigningKey().ID(), store.puts
	tests := []struct {
		name string
		// read returns "" when what it read is right, else what is wrong.
		read func() string
	}{
		{"SigningKey", func() string {
			if k := s.SigningKey(); k == nil || k.ID() != active {
				return "SigningKey is not the active key"
			}
			return ""
		}},
		{"PublicKeys", func() string {
			if n := len(s.PublicKeys()); n != 2 {
				return "PublicKeys does not hold the active and the next key"
			}
			return ""
		}},
		{"Algorithms", func() string {
			if a := s.Algorithms(); len(a) != 1 || string(a[0]) != EdDSA {
				return "Algorithms is not [EdDSA]"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if msg := tt.read(); msg != "" {
						b.Error(msg) // b.Fatal may only be called from the benchmark's own goroutine
						return
					}
				}
			})
		})
	}
	if store.puts != opened {
		b.Fatalf("the store saw %d writes after Open: the reads must never write", store.puts-opened)
	}
}
