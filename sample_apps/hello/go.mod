module cgotrace.test/hello

go 1.21
