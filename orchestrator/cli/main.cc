// llmorch: the ops CLI. Thin: everything is in llmorch_cli.
#include <iostream>

#include "commands.h"

int main(int argc, char** argv) { return llmorch::cli::run({argv, argv + argc}, {std::cout, std::cerr}); }
