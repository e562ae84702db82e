package coqa

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	pbar "qllama/internal/progress"
	"strconv"
	"strings"
	"time"
)

// DefaultURL is the CoQA v1.0 dev file (500 stories, 7,983 turns).
const DefaultURL = "https://nlp.stanford.edu/data/coqa/coqa-dev-v1.0.json"

// DownloadOptions configures DownloadWith.
type DownloadOptions struct {
	URL      string    // default DefaultURL
	CacheDir string    // required; created if missing
	SHA256   string    // optional expected hex digest of the whole file
	Progress io.Writer // nil: no progress output
	// Client is the HTTP client (default http.DefaultClient).
	Client *http.Client
	// MaxAttempts bounds the requests made when a transfer is cut (default 5).
	// Every retry resumes from the bytes already in the ".part" file.
	MaxAttempts int
	// RetryDelay is the pause before the second attempt, growing linearly
	// (default 500ms).
	RetryDelay time.Duration
}

// Download fetches url (DefaultURL if empty) into cacheDir and returns the
// path of the file, named after the URL's last path element. See
// DownloadWith; Download uses its defaults and no digest check.
func Download(ctx context.Context, url, cacheDir string, progress io.Writer) (string, error) {
	return DownloadWith(ctx, DownloadOptions{URL: url, CacheDir: cacheDir, Progress: progress})
}

// httpStatusError is a response status that retrying will not fix.
type httpStatusError struct {
	url    string
	status string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.url, e.status) }

// DownloadWith fetches o.URL into o.CacheDir. A file already in the cache is
// returned without network access (after the digest check when o.SHA256 is
// set). Otherwise bytes go to "<name>.part"; an existing partial file is
// resumed with an HTTP Range request (a server that ignores Range restarts it
// from zero), a cut connection is retried from where it stopped, the size is
// checked against Content-Length / Content-Range, the optional SHA-256 is
// verified, and the file is renamed into place atomically. Progress goes to
// o.Progress: a progress bar on a terminal, plain lines otherwise.
func DownloadWith(ctx context.Context, o DownloadOptions) (string, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.CacheDir == "" {
		return "", errors.New("download: no cache directory")
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	name := path.Base(u.Path)
	if name == "" || name == "." || name == "/" || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("download %s: URL has no file name", o.URL)
	}
	want := strings.ToLower(strings.TrimSpace(o.SHA256))
	dest := filepath.Join(o.CacheDir, name)
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() {
		if want != "" {
			if err := checkSHA256(dest, want); err != nil {
				return "", fmt.Errorf("download: cached %w (delete it to download again)", err)
			}
		}
		return dest, nil
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	attempts := o.MaxAttempts
	if attempts <= 0 {
		attempts = 5
	}
	delay := o.RetryDelay
	if delay <= 0 {
		delay = 500 * time.Millisecond
	}
	part := dest + ".part"
	var lastErr error
	for a := 1; a <= attempts; a++ {
		if a > 1 {
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("download %s: %w (last error: %v)", o.URL, ctx.Err(), lastErr)
			case <-time.After(time.Duration(a-2) * delay):
			}
		}
		lastErr = fetchOnce(ctx, client, o.URL, part, name, o.Progress)
		if lastErr == nil {
			break
		}
		var se *httpStatusError
		if errors.As(lastErr, &se) || ctx.Err() != nil {
			return "", fmt.Errorf("download: %w", lastErr)
		}
	}
	if lastErr != nil {
		return "", fmt.Errorf("download %s: giving up after %d attempts (partial data kept in %s): %w", o.URL, attempts, part, lastErr)
	}
	if want != "" {
		if err := checkSHA256(part, want); err != nil {
			os.Remove(part)
			return "", fmt.Errorf("download %s: %w", o.URL, err)
		}
	}
	if err := os.Rename(part, dest); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	return dest, nil
}

// fetchOnce makes one request, resuming part if it has data. It returns nil
// when part holds the complete file.
func fetchOnce(ctx context.Context, client *http.Client, rawURL, part, name string, progress io.Writer) error {
	var off int64
	if fi, err := os.Stat(part); err == nil {
		off = fi.Size()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return &httpStatusError{rawURL, err.Error()}
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		off = 0 // full body: the server ignored Range or none was sent
		total = resp.ContentLength
	case http.StatusPartialContent:
		start, tot, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != off {
			os.Remove(part) // cannot trust the partial data any more
			return fmt.Errorf("GET %s: bad Content-Range %q for a resume at byte %d", rawURL, resp.Header.Get("Content-Range"), off)
		}
		total = tot
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial file is at least as long as the remote one.
		if _, tot, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && tot == off {
			return nil
		}
		os.Remove(part)
		return fmt.Errorf("GET %s: partial file of %d bytes does not fit the remote file; restarting", rawURL, off)
	default:
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
			return fmt.Errorf("GET %s: %s", rawURL, resp.Status)
		}
		return &httpStatusError{rawURL, resp.Status}
	}
	flag := os.O_CREATE | os.O_WRONLY
	if off == 0 {
		flag |= os.O_TRUNC
	} else {
		flag |= os.O_APPEND
	}
	f, err := os.OpenFile(part, flag, 0o644)
	if err != nil {
		return &httpStatusError{rawURL, err.Error()}
	}
	prog := pbar.New(progress, total, name, pbar.Options{Bytes: true, Already: off})
	n, copyErr := io.Copy(f, &countingReader{r: resp.Body, p: prog})
	syncErr := f.Sync()
	closeErr := f.Close()
	prog.Finish()
	got := off + n
	if copyErr != nil {
		if total >= 0 {
			return fmt.Errorf("GET %s: got %d of %d bytes: %w", rawURL, got, total, copyErr)
		}
		return fmt.Errorf("GET %s: after %d bytes: %w", rawURL, got, copyErr)
	}
	if err := errors.Join(syncErr, closeErr); err != nil {
		return &httpStatusError{rawURL, err.Error()}
	}
	if total >= 0 && got != total {
		if got > total {
			os.Remove(part)
		}
		return fmt.Errorf("GET %s: size mismatch: have %d bytes, server announced %d", rawURL, got, total)
	}
	return nil
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", then
// -1) or "bytes */TOTAL" (START is -1).
func parseContentRange(h string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("bad Content-Range %q", h)
		}
	}
	if rng == "*" {
		return -1, total, nil
	}
	s, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	if start, err = strconv.ParseInt(s, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	return start, total, nil
}

type countingReader struct {
	r io.Reader
	p *pbar.Bar
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}

func checkSHA256(file, want string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", file, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("file %s has sha256 %s, want %s", file, got, want)
	}
	return nil
}
