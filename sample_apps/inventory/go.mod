module corp.test/inventory

go 1.21

require vendor.test/workpool v0.0.0

replace vendor.test/workpool => ../thirdparty/workpool
