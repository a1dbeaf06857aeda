// Host-side test of the selective-scan plugin: needs TensorRT's headers only (no GPU, no
// libnvinfer). Everything but enqueue is exercised through the interfaces TensorRT calls:
// the library's getCreators, field parsing, serialization round trip, clone, the format
// table, output types and shapes, shape checks and logging. Exit status: number of failures.
#include "NvInferRuntime.h"
#include "selectiveScanKernel.h"
#include "selectiveScanPlugin.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace
{

using nvinfer1::DataType;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;
using nvinfer1::TensorRTPhase;
using handssca::kB;

int gFailures = 0;

void check(bool condition, std::string const& what)
{
    std::printf("%s %s\n", condition ? "ok  " : "FAIL", what.c_str());
    if (!condition)
    {
        ++gFailures;
    }
}

class CapturingLogger final : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            errors.emplace_back(message);
        }
    }
    std::vector<std::string> errors;
};

class TestLoggerFinder final : public nvinfer1::ILoggerFinder
{
public:
    nvinfer1::ILogger* findLogger() override
    {
        return &logger;
    }
    CapturingLogger logger;
};

// getOutputShapes must not build expressions: it passes u's through. No method is called.
class UnusedExprBuilder final : public nvinfer1::IExprBuilder
{
};

struct PluginDeleter
{
    void operator()(nvinfer1::IPluginV3* plugin) const
    {
        delete plugin;
    }
};
using PluginPtr = std::unique_ptr<nvinfer1::IPluginV3, PluginDeleter>;

handssca::SelectiveScanPlugin* asScan(nvinfer1::IPluginV3* plugin)
{
    return dynamic_cast<handssca::SelectiveScanPlugin*>(plugin);
}

nvinfer1::IPluginV3OneBuild* build(nvinfer1::IPluginV3* plugin)
{
    return static_cast<nvinfer1::IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
}

nvinfer1::IPluginV3OneRuntime* runtime(nvinfer1::IPluginV3* plugin)
{
    return static_cast<nvinfer1::IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

nvinfer1::Dims dims(std::vector<int64_t> const& values)
{
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    for (size_t i = 0; i < values.size(); ++i)
    {
        d.d[i] = values[i];
    }
    return d;
}

// u, delta (B, D, L); A (D, N); B, C (B, G, N, L); D, delta_bias (D,); then the output.
std::vector<nvinfer1::DynamicPluginTensorDesc> descs(
    int64_t b, int64_t d, int64_t l, int64_t n, int64_t g, DataType activation = DataType::kFLOAT)
{
    std::vector<std::vector<int64_t>> shapes
        = {{b, d, l}, {b, d, l}, {d, n}, {b, g, n, l}, {b, g, n, l}, {d}, {d}, {b, d, l}};
    std::vector<nvinfer1::DynamicPluginTensorDesc> out(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i)
    {
        out[i].desc.dims = dims(shapes[i]);
        out[i].desc.format = TensorFormat::kLINEAR;
        out[i].desc.type = (i == 2 || i == 5 || i == 6) ? DataType::kFLOAT : activation;
        out[i].min = out[i].max = out[i].opt = out[i].desc.dims;
    }
    return out;
}

nvinfer1::IPluginCreatorV3One* findCreator()
{
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
    check(count == 1 && creators != nullptr, "getCreators lists one creator");
    if (count != 1 || creators == nullptr)
    {
        return nullptr;
    }
    nvinfer1::InterfaceInfo const info = creators[0]->getInterfaceInfo();
    check(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0, "the creator is an IPluginCreatorV3One");
    return static_cast<nvinfer1::IPluginCreatorV3One*>(creators[0]);
}

PluginPtr create(nvinfer1::IPluginCreatorV3One* creator, std::vector<PluginField> const& fields,
    TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection fc{};
    fc.nbFields = static_cast<int32_t>(fields.size());
    fc.fields = fields.data();
    return PluginPtr(creator->createPlugin("scan_node", &fc, phase));
}

void testCreator(nvinfer1::IPluginCreatorV3One* creator)
{
    check(std::string(creator->getPluginName()) == "HandSSCASelectiveScan", "creator name = the exporter's op_type");
    check(std::string(creator->getPluginVersion()) == "1", "creator version = the node's plugin_version");
    check(std::string(creator->getPluginNamespace()).empty(), "creator namespace = the node's plugin_namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    check(names != nullptr && names->nbFields == 1 && std::string(names->fields[0].name) == "delta_softplus"
            && names->fields[0].type == PluginFieldType::kINT32,
        "field names: delta_softplus (kINT32, as the ONNX parser passes an INT attribute)");
}

void testFieldsAndSerialization(nvinfer1::IPluginCreatorV3One* creator)
{
    for (int32_t value : {0, 1})
    {
        PluginPtr plugin = create(creator, {PluginField("delta_softplus", &value, PluginFieldType::kINT32, 1)});
        check(plugin != nullptr && asScan(plugin.get())->deltaSoftplus() == (value == 1),
            "createPlugin from delta_softplus=" + std::to_string(value));
        auto* core = static_cast<nvinfer1::IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
        check(std::string(core->getPluginName()) == "HandSSCASelectiveScan" && std::string(core->getPluginVersion()) == "1",
            "core capability: name and version");
        PluginFieldCollection const* saved = runtime(plugin.get())->getFieldsToSerialize();
        check(saved != nullptr && saved->nbFields == 1 && std::string(saved->fields[0].name) == "delta_softplus"
                && *static_cast<int32_t const*>(saved->fields[0].data) == value,
            "getFieldsToSerialize holds delta_softplus=" + std::to_string(value));
        std::vector<PluginField> copy(saved->fields, saved->fields + saved->nbFields);
        PluginPtr restored = create(creator, copy, TensorRTPhase::kRUNTIME);
        check(restored != nullptr && asScan(restored.get())->deltaSoftplus() == (value == 1),
            "runtime-phase createPlugin from the serialized fields round-trips");
    }
    PluginPtr defaulted = create(creator, {});
    check(defaulted != nullptr && asScan(defaulted.get())->deltaSoftplus(), "a missing delta_softplus means 1");
    int64_t wide = 0;
    PluginPtr fromInt64 = create(creator, {PluginField("delta_softplus", &wide, PluginFieldType::kINT64, 1)});
    check(fromInt64 != nullptr && !asScan(fromInt64.get())->deltaSoftplus(), "a kINT64 field is read too");
    char const version[] = "1";
    PluginPtr withVersion = create(creator, {PluginField("plugin_version", version, PluginFieldType::kCHAR, 2)});
    check(withVersion != nullptr, "plugin_version / plugin_namespace fields are accepted and ignored");

    int32_t bad = 2;
    check(create(creator, {PluginField("delta_softplus", &bad, PluginFieldType::kINT32, 1)}) == nullptr,
        "delta_softplus=2 is refused");
    float asFloat = 1.0F;
    check(create(creator, {PluginField("delta_softplus", &asFloat, PluginFieldType::kFLOAT32, 1)}) == nullptr,
        "a float delta_softplus is refused");
    int32_t pair[2] = {1, 1};
    check(create(creator, {PluginField("delta_softplus", pair, PluginFieldType::kINT32, 2)}) == nullptr,
        "two delta_softplus values are refused");
    int32_t one = 1;
    check(create(creator, {PluginField("delta", &one, PluginFieldType::kINT32, 1)}) == nullptr,
        "an unknown field is refused");
}

void testClone(nvinfer1::IPluginCreatorV3One* creator)
{
    int32_t value = 0;
    PluginPtr original = create(creator, {PluginField("delta_softplus", &value, PluginFieldType::kINT32, 1)});
    PluginPtr copy(original->clone());
    PluginPtr attached(runtime(original.get())->attachToContext(nullptr));
    check(copy != nullptr && attached != nullptr, "clone and attachToContext give new plugins");
    PluginFieldCollection const* a = runtime(original.get())->getFieldsToSerialize();
    PluginFieldCollection const* b = runtime(copy.get())->getFieldsToSerialize();
    check(a->fields[0].data != b->fields[0].data, "a clone serializes its own fields (deep copy)");
    original.reset();
    check(*static_cast<int32_t const*>(runtime(copy.get())->getFieldsToSerialize()->fields[0].data) == 0
            && !asScan(copy.get())->deltaSoftplus(),
        "a clone outlives its original");
}

void testFormats(nvinfer1::IPluginV3OneBuild* plugin)
{
    DataType const activations[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
    for (DataType type : activations)
    {
        auto d = descs(2, 8, 33, 16, 4, type);
        bool all = true;
        for (int32_t pos = 0; pos < 8; ++pos)
        {
            all = all && plugin->supportsFormatCombination(pos, d.data(), 7, 1);
        }
        check(all, "every position accepts activation type " + std::to_string(static_cast<int32_t>(type)));
        for (int32_t pos : {2, 5, 6})
        {
            auto wrong = d;
            wrong[pos].desc.type = DataType::kHALF;
            check(!plugin->supportsFormatCombination(pos, wrong.data(), 7, 1),
                "A / D / delta_bias must stay fp32 (position " + std::to_string(pos) + ")");
        }
        for (int32_t pos : {1, 3, 4, 7})
        {
            auto mixed = d;
            mixed[pos].desc.type = type == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
            check(!plugin->supportsFormatCombination(pos, mixed.data(), 7, 1),
                "position " + std::to_string(pos) + " must have u's type");
        }
        auto strided = d;
        strided[0].desc.format = TensorFormat::kCHW32;
        check(!plugin->supportsFormatCombination(0, strided.data(), 7, 1), "only the linear format");
    }
    for (DataType type : {DataType::kINT8, DataType::kINT32, DataType::kBOOL})
    {
        auto d = descs(1, 4, 5, 2, 1, type);
        check(!plugin->supportsFormatCombination(0, d.data(), 7, 1), "non-float activations are refused");
    }
    auto d = descs(1, 4, 5, 2, 1);
    check(!plugin->supportsFormatCombination(8, d.data(), 7, 1) && !plugin->supportsFormatCombination(0, d.data(), 6, 1),
        "bad positions and input counts are refused");
}

void testTypesAndShapes(nvinfer1::IPluginV3* plugin)
{
    nvinfer1::IPluginV3OneBuild* b = build(plugin);
    check(b->getNbOutputs() == 1, "one output");
    for (DataType type : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        DataType in[7] = {type, type, DataType::kFLOAT, type, type, DataType::kFLOAT, DataType::kFLOAT};
        DataType out[1] = {DataType::kINT8};
        check(b->getOutputDataTypes(out, 1, in, 7) == 0 && out[0] == type, "output type = u's type");
    }
    DataType in[7]{};
    DataType out[1]{};
    check(b->getOutputDataTypes(out, 1, in, 6) != 0, "getOutputDataTypes refuses 6 inputs");

    // Expressions are opaque here: the output must reuse u's exactly.
    std::vector<nvinfer1::DimsExprs> inputs(7);
    std::vector<int32_t> ranks = {3, 3, 2, 4, 4, 1, 1};
    for (int32_t i = 0; i < 7; ++i)
    {
        inputs[i].nbDims = ranks[i];
        for (int32_t k = 0; k < ranks[i]; ++k)
        {
            inputs[i].d[k] = reinterpret_cast<nvinfer1::IDimensionExpr const*>(static_cast<uintptr_t>(0x1000 + 16 * (i * 8 + k)));
        }
    }
    nvinfer1::DimsExprs outputs[1]{};
    UnusedExprBuilder builder;
    int32_t const status = b->getOutputShapes(inputs.data(), 7, nullptr, 0, outputs, 1, builder);
    check(status == 0 && outputs[0].nbDims == 3 && outputs[0].d[0] == inputs[0].d[0] && outputs[0].d[1] == inputs[0].d[1]
            && outputs[0].d[2] == inputs[0].d[2],
        "output shape = u's shape");
    inputs[0].nbDims = 2;
    check(b->getOutputShapes(inputs.data(), 7, nullptr, 0, outputs, 1, builder) != 0, "a 2-D u is refused");

    auto good = descs(2, 8, 33, 16, 4);
    check(b->configurePlugin(good.data(), 7, good.data() + 7, 1) == 0, "configurePlugin accepts agreeing shapes");
    auto dynamic = descs(-1, 8, -1, 16, 4);
    check(b->configurePlugin(dynamic.data(), 7, dynamic.data() + 7, 1) == 0, "dynamic batch and length are fine");
    auto badGroups = descs(2, 6, 33, 16, 4);
    check(b->configurePlugin(badGroups.data(), 7, badGroups.data() + 7, 1) != 0, "channels % groups != 0 is refused");
    auto tooManyStates = descs(1, 8, 5, 257, 4);
    check(b->configurePlugin(tooManyStates.data(), 7, tooManyStates.data() + 7, 1) != 0, "N > 256 is refused");
    auto mismatch = descs(2, 8, 33, 16, 4);
    mismatch[2].desc.dims = dims({9, 16});
    check(b->configurePlugin(mismatch.data(), 7, mismatch.data() + 7, 1) != 0, "A with the wrong rows is refused");
    check(b->getWorkspaceSize(good.data(), 7, good.data() + 7, 1) == handssca::selectiveScanMaxWorkspaceSize(16)
            && handssca::selectiveScanMaxWorkspaceSize(16) == 2 * 512 * 16 * 8,
        "workspace: the segment totals' bound for N = 16");

    std::vector<nvinfer1::PluginTensorDesc> runtimeDescs;
    for (auto const& dd : good)
    {
        runtimeDescs.push_back(dd.desc);
    }
    nvinfer1::IPluginV3OneRuntime* r = runtime(plugin);
    check(r->onShapeChange(runtimeDescs.data(), 7, runtimeDescs.data() + 7, 1) == 0, "onShapeChange accepts the shapes");
    runtimeDescs[kB].dims = dims({2, 4, 16, 34});
    check(r->onShapeChange(runtimeDescs.data(), 7, runtimeDescs.data() + 7, 1) != 0,
        "onShapeChange refuses a B of another length");
}

} // namespace

int main()
{
    TestLoggerFinder finder;
    setLoggerFinder(&finder);
    nvinfer1::IPluginCreatorV3One* creator = findCreator();
    if (creator == nullptr)
    {
        return 1;
    }
    testCreator(creator);
    testFieldsAndSerialization(creator);
    check(!finder.logger.errors.empty() && finder.logger.errors.back().find("unknown field") != std::string::npos,
        "errors reach TensorRT's logger through setLoggerFinder");
    testClone(creator);
    PluginPtr plugin = create(creator, {});
    testFormats(build(plugin.get()));
    testTypesAndShapes(plugin.get());
    std::printf("%d failure(s)\n", gFailures);
    return gFailures;
}
