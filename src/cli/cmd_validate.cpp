// Placeholder: this command is not built yet.
#include "cli/common.h"

namespace kllens::cli {

void add_validate_metrics(CLI::App&) {}

}  // namespace kllens::cli
