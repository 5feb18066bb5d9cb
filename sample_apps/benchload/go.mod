module cgotrace.test/benchload

go 1.21
