module cgotrace.test/tzload

go 1.21
