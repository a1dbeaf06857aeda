#include "selectiveScanPlugin.h"

#include "pluginLogger.h"
#include "selectiveScanKernel.h"

#include <cstring>
#include <exception>
#include <new>
#include <string>

namespace handssca
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

constexpr char const* kDeltaSoftplusField = "delta_softplus";

bool isActivationType(DataType type) noexcept
{
    return type == DataType::kFLOAT || type == DataType::kHALF || type == DataType::kBF16;
}

ScanDataType toScanType(DataType type) noexcept
{
    switch (type)
    {
    case DataType::kHALF: return ScanDataType::kFLOAT16;
    case DataType::kBF16: return ScanDataType::kBFLOAT16;
    default: return ScanDataType::kFLOAT32;
    }
}

// The ranks each input must have: u, delta (B, D, L); A (D, N); B, C (B, G, N, L); D, delta_bias (D,).
constexpr int32_t kInputRanks[kNbInputs] = {3, 3, 2, 4, 4, 1, 1};

// Shapes that make sense together, where known (-1 is a dynamic dimension at build time).
bool shapesAgree(nvinfer1::Dims const* dims) noexcept
{
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        if (dims[i].nbDims != kInputRanks[i])
        {
            return false;
        }
    }
    auto same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    nvinfer1::Dims const& u = dims[kU];
    int64_t const channels = u.d[1];
    bool ok = same(dims[kDelta].d[0], u.d[0]) && same(dims[kDelta].d[1], channels) && same(dims[kDelta].d[2], u.d[2]);
    ok = ok && same(dims[kA].d[0], channels) && same(dims[kD].d[0], channels) && same(dims[kDeltaBias].d[0], channels);
    for (int32_t i : {kB, kC})
    {
        ok = ok && same(dims[i].d[0], u.d[0]) && same(dims[i].d[2], dims[kA].d[1]) && same(dims[i].d[3], u.d[2]);
    }
    ok = ok && same(dims[kB].d[1], dims[kC].d[1]);
    int64_t const groups = dims[kB].d[1];
    if (channels > 0 && groups > 0)
    {
        ok = ok && channels % groups == 0;
    }
    if (dims[kA].d[1] > 0)
    {
        ok = ok && dims[kA].d[1] <= kMaxScanStates;
    }
    return ok;
}

bool readInteger(PluginField const& field, int64_t& value) noexcept
{
    if (field.data == nullptr || field.length != 1)
    {
        return false;
    }
    switch (field.type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(field.data); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
    default: return false;
    }
}

} // namespace

// ---------------------------------------------------------------------------------------------
// SelectiveScanPlugin

SelectiveScanPlugin::SelectiveScanPlugin(bool deltaSoftplus, std::string pluginNamespace)
    : mDeltaSoftplus(deltaSoftplus ? 1 : 0)
    , mNamespace(std::move(pluginNamespace))
{
    initFields();
}

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanPlugin const& other)
    : nvinfer1::IPluginV3(other)
    , nvinfer1::IPluginV3OneCore(other)
    , nvinfer1::IPluginV3OneBuild(other)
    , nvinfer1::IPluginV3OneRuntime(other)
    , mDeltaSoftplus(other.mDeltaSoftplus)
    , mNamespace(other.mNamespace)
{
    initFields(); // the copy's fields point at its own members
}

void SelectiveScanPlugin::initFields() noexcept
{
    mFields.clear();
    mFields.emplace_back(kDeltaSoftplusField, &mDeltaSoftplus, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

nvinfer1::IPluginCapability* SelectiveScanPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::clone() noexcept
{
    try
    {
        return new SelectiveScanPlugin(*this);
    }
    catch (std::exception const& error)
    {
        logPluginError(error.what());
    }
    return nullptr;
}

char const* SelectiveScanPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* SelectiveScanPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* SelectiveScanPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t SelectiveScanPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (in == nullptr || nbInputs != kNbInputs || nbOutputs != 1)
    {
        logPluginError("HandSSCASelectiveScan: expects 7 inputs (u, delta, A, B, C, D, delta_bias) and 1 output");
        return -1;
    }
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        dims[i] = in[i].desc.dims;
    }
    if (!shapesAgree(dims))
    {
        logPluginError("HandSSCASelectiveScan: input shapes do not agree (see the node's schema)");
        return -1;
    }
    return 0;
}

int32_t SelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != kNbInputs)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[kU];
    return 0;
}

int32_t SelectiveScanPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != 1
        || inputs[kU].nbDims != kInputRanks[kU])
    {
        return -1;
    }
    outputs[0] = inputs[kU];
    return 0;
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kOutput)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kA:
    case kD:
    case kDeltaBias: return desc.type == DataType::kFLOAT;
    case kU: return isActivationType(desc.type);
    default: return desc.type == inOut[kU].desc.type; // delta, B, C and the output follow u
    }
}

int32_t SelectiveScanPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t SelectiveScanPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    // Segment totals when a long scan is split over more blocks (small batch x channels): a bound
    // that holds for every batch and length of the profile.
    if (inputs == nullptr || nbInputs != kNbInputs || inputs[kA].max.nbDims != 2)
    {
        return selectiveScanMaxWorkspaceSize(kMaxScanStates);
    }
    int64_t const dstate = inputs[kA].max.d[1];
    return selectiveScanMaxWorkspaceSize(dstate > 0 && dstate <= kMaxScanStates ? static_cast<int32_t>(dstate) : kMaxScanStates);
}

int32_t SelectiveScanPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (in == nullptr || nbInputs != kNbInputs || nbOutputs != 1)
    {
        return -1;
    }
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        dims[i] = in[i].dims;
    }
    return shapesAgree(dims) ? 0 : -1;
}

int32_t SelectiveScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* workspace, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    nvinfer1::Dims const& u = inputDesc[kU].dims;
    SelectiveScanParams params;
    params.batch = static_cast<int32_t>(u.d[0]);
    params.dim = static_cast<int32_t>(u.d[1]);
    params.length = static_cast<int32_t>(u.d[2]);
    params.dstate = static_cast<int32_t>(inputDesc[kA].dims.d[1]);
    params.groups = static_cast<int32_t>(inputDesc[kB].dims.d[1]);
    params.deltaSoftplus = mDeltaSoftplus != 0;
    params.dtype = toScanType(inputDesc[kU].type);
    params.u = inputs[kU];
    params.delta = inputs[kDelta];
    params.A = static_cast<float const*>(inputs[kA]);
    params.B = inputs[kB];
    params.C = inputs[kC];
    params.D = static_cast<float const*>(inputs[kD]);
    params.deltaBias = static_cast<float const*>(inputs[kDeltaBias]);
    params.out = outputs[0];
    cudaError_t const status = launchSelectiveScan(params, workspace, stream);
    if (status != cudaSuccess)
    {
        std::string const message = std::string("HandSSCASelectiveScan: kernel launch failed: ")
            + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
        logPluginError(message.c_str());
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources: each execution context gets its own copy
}

nvinfer1::PluginFieldCollection const* SelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

// ---------------------------------------------------------------------------------------------
// SelectiveScanPluginCreator

SelectiveScanPluginCreator::SelectiveScanPluginCreator()
{
    mFieldNames.emplace_back(kDeltaSoftplusField, nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* SelectiveScanPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* SelectiveScanPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* SelectiveScanPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

void SelectiveScanPluginCreator::setPluginNamespace(char const* pluginNamespace) noexcept
{
    mNamespace = pluginNamespace != nullptr ? pluginNamespace : "";
}

nvinfer1::PluginFieldCollection const* SelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* SelectiveScanPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        int64_t deltaSoftplus = 1; // the exporter always writes it; mamba's SS2D uses softplus
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            if (field.name == nullptr)
            {
                continue;
            }
            if (std::strcmp(field.name, kDeltaSoftplusField) == 0)
            {
                if (!readInteger(field, deltaSoftplus) || (deltaSoftplus != 0 && deltaSoftplus != 1))
                {
                    logPluginError("HandSSCASelectiveScan: delta_softplus must be one integer, 0 or 1");
                    return nullptr;
                }
            }
            else if (std::strcmp(field.name, "plugin_version") != 0 && std::strcmp(field.name, "plugin_namespace") != 0)
            {
                std::string const message = std::string("HandSSCASelectiveScan: unknown field '") + field.name + "'";
                logPluginError(message.c_str());
                return nullptr;
            }
        }
        return new SelectiveScanPlugin(deltaSoftplus != 0, mNamespace);
    }
    catch (std::exception const& error)
    {
        logPluginError(error.what());
    }
    return nullptr;
}

} // namespace handssca
