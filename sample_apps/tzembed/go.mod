module cgotrace.test/tzembed

go 1.21
