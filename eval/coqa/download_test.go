package coqa

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// payload is the served file: a synthetic dataset, so the downloaded file
// also parses.
func payload(t *testing.T) []byte {
	t.Helper()
	data, err := Synthesize(5, 40).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rangeServer serves body with http.ServeContent (Range support). When cutAt
// > 0, full-body responses (no Range header) stop after cutAt bytes and the
// connection is closed. Every request's Range header is recorded.
type rangeServer struct {
	body   []byte
	cutAt  int
	mu     sync.Mutex
	ranges []string
}

func (s *rangeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if s.cutAt > 0 && r.Header.Get("Range") == "" {
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("no hijacker")
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n", len(s.body))
		buf.Write(s.body[:s.cutAt])
		buf.Flush()
		conn.Close()
		return
	}
	http.ServeContent(w, r, "coqa-dev-v1.0.json", time.Unix(0, 0), bytes.NewReader(s.body))
}

func (s *rangeServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func sha(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func TestDownloadResumeAfterCut(t *testing.T) {
	body := payload(t)
	srv := &rangeServer{body: body, cutAt: len(body) / 3}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	dir := filepath.Join(t.TempDir(), "cache")
	var prog bytes.Buffer
	path, err := DownloadWith(context.Background(), DownloadOptions{
		URL: ts.URL + "/data/coqa-dev-v1.0.json", CacheDir: dir, SHA256: sha(body), Progress: &prog, RetryDelay: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "coqa-dev-v1.0.json") {
		t.Errorf("path %s", path)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("downloaded %d bytes differ from the %d served", len(got), len(body))
	}
	want := []string{"", fmt.Sprintf("bytes=%d-", len(body)/3)}
	if r := srv.seen(); strings.Join(r, "|") != strings.Join(want, "|") {
		t.Errorf("requests with Range %q, want %q", r, want)
	}
	if _, err := os.Stat(path + ".part"); !os.IsNotExist(err) {
		t.Errorf(".part left behind: %v", err)
	}
	if !strings.Contains(prog.String(), "coqa-dev-v1.0.json: ") || !strings.Contains(prog.String(), "MiB") {
		t.Errorf("progress %q", prog.String())
	}
	if _, err := Load(path); err != nil {
		t.Errorf("downloaded file does not load: %v", err)
	}
	// Cached: no new request.
	n := len(srv.seen())
	if p2, err := Download(context.Background(), ts.URL+"/data/coqa-dev-v1.0.json", dir, nil); err != nil || p2 != path {
		t.Fatalf("cached download: %s, %v", p2, err)
	}
	if len(srv.seen()) != n {
		t.Error("cached file was downloaded again")
	}
}

func TestDownloadResumesExistingPart(t *testing.T) {
	body := payload(t)
	srv := &rangeServer{body: body}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	dir := t.TempDir()
	part := filepath.Join(dir, "coqa-dev-v1.0.json.part")
	if err := os.WriteFile(part, body[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	path, err := Download(context.Background(), ts.URL+"/coqa-dev-v1.0.json", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, body) {
		t.Fatal("content differs after resume")
	}
	if r := srv.seen(); len(r) != 1 || r[0] != "bytes=1000-" {
		t.Errorf("requests %q, want one with bytes=1000-", r)
	}
}

// A server that ignores Range restarts the file from zero.
func TestDownloadServerIgnoresRange(t *testing.T) {
	body := payload(t)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	}))
	defer ts.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.json.part"), []byte("garbage that must go"), 0o644); err != nil {
		t.Fatal(err)
	}
	path, err := Download(context.Background(), ts.URL+"/f.json", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, body) {
		t.Fatal("content differs")
	}
}

func TestDownloadErrors(t *testing.T) {
	body := payload(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		sha     string
		want    string
		part    bool // .part kept for a later resume
	}{
		{
			name:    "404",
			handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			want:    "404 Not Found",
		},
		{
			// Content-Length announces more than is ever sent, on every attempt.
			name: "wrong size",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, buf, _ := w.(http.Hijacker).Hijack()
				fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body)+100)
				buf.Write(body)
				buf.Flush()
				conn.Close()
			},
			want: fmt.Sprintf("giving up after 3 attempts (partial data kept in %s): GET %s: got %d of %d bytes", "PART", "URL", len(body), len(body)+100),
			part: true,
		},
		{
			name:    "sha256 mismatch",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write(body) },
			sha:     strings.Repeat("0", 64),
			want:    "want " + strings.Repeat("0", 64),
		},
		{
			name: "bad content-range",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Range", "bytes 7-9/10")
				w.WriteHeader(http.StatusPartialContent)
				w.Write([]byte("abc"))
			},
			want: "bad Content-Range",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(tc.handler)
			defer ts.Close()
			dir := t.TempDir()
			if tc.name == "bad content-range" {
				os.WriteFile(filepath.Join(dir, "coqa.json.part"), []byte("12345"), 0o644)
			}
			url := ts.URL + "/coqa.json"
			_, err := DownloadWith(context.Background(), DownloadOptions{URL: url, CacheDir: dir, SHA256: tc.sha, MaxAttempts: 3, RetryDelay: time.Millisecond})
			part := filepath.Join(dir, "coqa.json.part")
			want := strings.NewReplacer("PART", part, "URL", url).Replace(tc.want)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v\nwant containing %q", err, want)
			}
			if _, err := os.Stat(filepath.Join(dir, "coqa.json")); !os.IsNotExist(err) {
				t.Error("final file exists after a failed download")
			}
			if _, err := os.Stat(part); (err == nil) != tc.part {
				t.Errorf(".part exists = %v, want %v", err == nil, tc.part)
			}
		})
	}
}

func TestDownloadCancelled(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := Download(ctx, ts.URL+"/x.json", t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/1000", 100, 1000, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes */1000", -1, 1000, true},
		{"items 1-2/3", 0, 0, false},
		{"bytes 1-2", 0, 0, false},
		{"bytes x-2/3", 0, 0, false},
	}
	for _, tc := range tests {
		s, tot, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", tc.in, s, tot, err)
		}
	}
}
