# Thin aliases for the two quick-start scripts.
.PHONY: run test
run:
	./run.sh
test:
	./test.sh
