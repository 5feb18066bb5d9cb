module cgotrace.test/benchhttp

go 1.21
