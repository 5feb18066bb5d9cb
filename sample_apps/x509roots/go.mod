module cgotrace.test/x509roots

go 1.21
