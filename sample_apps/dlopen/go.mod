module cgotrace.test/dlopen

go 1.21
