module cgotrace.test/benchuser

go 1.21
