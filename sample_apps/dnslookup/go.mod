module cgotrace.test/dnslookup

go 1.21
