#pragma once
// Human-readable summary of an artifact for `pgolf info FILE`.
#include <string>

#include "artifact/reader.h"

namespace pgolf::artifact {

// Version and sizes, one line per section (compressor, shuffle, order, raw -> stored bytes, ratio)
// and one per tensor (kind, bits, shape, flags, group, stored bytes by part).
std::string describe_artifact(const ArtifactFileInfo& info);

}  // namespace pgolf::artifact
