GREETING = "hello from greeter"
