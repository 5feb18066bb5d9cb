module cgotrace.test/signals

go 1.21
