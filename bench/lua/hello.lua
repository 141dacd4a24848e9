-- The hello-world baseline: GET / on bench/hello.py.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
wrk.path = "/"
