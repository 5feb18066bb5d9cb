module cgotrace.test/execchild

go 1.21
