module wasminfer.dev/bench/loadgen

go 1.21
