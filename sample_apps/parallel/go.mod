module cgotrace.test/parallel

go 1.21
