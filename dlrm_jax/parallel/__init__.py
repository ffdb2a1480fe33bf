"""The devices: mesh and sharding rules, processes (hosts), host memory, and the jitted steps over them."""
