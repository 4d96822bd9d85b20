// loadgen: closed-loop HTTP/1.1 load on one URL, each client on its own keep-alive connection.
//
// It prints one JSON line: requests answered, of which 503 (refused: the server's backpressure)
// and other failures (any other status, or no answer), seconds, 200 answers per second, latency
// median and p99 of the 200 answers (ms), and the CPU seconds the generator itself used, so a
// benchmark on a small machine can say what the load cost besides the server.
//
//	loadgen -url http://127.0.0.1:8080/hello -c 8 -d 5s -warmup 1s
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"
)

type result struct {
	Requests   int     `json:"requests"`
	Refused    int     `json:"refused"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	MedianMs   float64 `json:"median_ms"`
	P99Ms      float64 `json:"p99_ms"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func main() {
	url := flag.String("url", "", "the URL to GET")
	clients := flag.Int("c", 8, "concurrent clients, one connection each")
	duration := flag.Duration("d", 5*time.Second, "how long to measure")
	warmup := flag.Duration("warmup", time.Second, "load before measuring (connections open, caches warm)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: *clients, MaxConnsPerHost: *clients, DisableCompression: true}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	var stop sync.WaitGroup
	var mu sync.Mutex
	var latencies []time.Duration
	errors, refused, total := 0, 0, 0
	var startAt, endAt time.Time
	begin := make(chan struct{})
	stop.Add(*clients)
	for i := 0; i < *clients; i++ {
		go func() {
			defer stop.Done()
			mine := make([]time.Duration, 0, 4096)
			bad, busy, sent := 0, 0, 0
			counting := false
			for {
				if !counting {
					select {
					case <-begin: // endAt is set before begin closes
						counting = true
					default:
					}
				}
				now := time.Now()
				if counting && now.After(endAt) {
					break
				}
				resp, err := client.Get(*url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				took := time.Since(now)
				if counting {
					sent++
					switch {
					case err != nil:
						bad++
					case resp.StatusCode == http.StatusOK:
						mine = append(mine, took)
					case resp.StatusCode == http.StatusServiceUnavailable:
						busy++
					default:
						bad++
					}
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errors += bad
			refused += busy
			total += sent
			mu.Unlock()
		}()
	}
	time.Sleep(*warmup)
	cpu0 := cpuSeconds()
	startAt = time.Now()
	endAt = startAt.Add(*duration)
	close(begin)
	stop.Wait()
	elapsed := time.Since(startAt).Seconds()
	cpu := cpuSeconds() - cpu0
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	pick := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(q*float64(len(latencies)-1))]) / 1e6
	}
	out := result{Requests: total, Refused: refused, Errors: errors, Seconds: elapsed, RPS: float64(len(latencies)) / elapsed,
		MedianMs: pick(0.5), P99Ms: pick(0.99), CPUSeconds: cpu}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
