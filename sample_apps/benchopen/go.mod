module cgotrace.test/benchopen

go 1.21
