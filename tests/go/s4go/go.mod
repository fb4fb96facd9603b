module s4go

go 1.19
