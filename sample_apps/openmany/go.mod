module cgotrace.test/openmany

go 1.21
