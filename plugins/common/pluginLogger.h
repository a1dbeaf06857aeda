// Logging from inside the plugin library through the logger TensorRT hands over in
// setLoggerFinder(); silent until then (e.g. in the host-side tests).
#pragma once

#include "NvInferRuntime.h"

namespace handssca
{

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* message) noexcept;

inline void logPluginError(char const* message) noexcept
{
    logPluginMessage(nvinfer1::ILogger::Severity::kERROR, message);
}

} // namespace handssca
