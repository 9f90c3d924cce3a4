// safetensors: byte-level format, round trips, and import validation naming the tensor.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>

#include "model/gpt.h"
#include "model/safetensors.h"
#include "model_test_util.h"

namespace pgolf::model {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / fmt::format("pgolf_st_{}_{}", ::getpid(), name)).string();
}

std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a pgolf::Error";
  return "";
}

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header << data;
}

TEST(Safetensors, ByteLayoutIsTheStandardFormat) {
  const std::string path = temp_path("layout.safetensors");
  write_safetensors(path, {{"a", Tensor::from_vector(std::vector<float>{1.f, -2.f}, Shape{2})},
                           {"b", Tensor::from_vector(std::vector<int32_t>{7, 8, 9}, Shape{3, 1})}},
                    {{"format", "pt"}});
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  ASSERT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 8 + 12);
  const std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), std::string::npos) << header;
  EXPECT_NE(header.find(R"("b":{"dtype":"I32","shape":[3,1],"data_offsets":[8,20]})"), std::string::npos) << header;
  float first;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  EXPECT_EQ(first, 1.f);
  std::map<std::string, std::string> meta;
  auto back = read_safetensors(path, &meta);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].name, "a");
  EXPECT_EQ(back[0].tensor.to_float_vector(), (std::vector<float>{1.f, -2.f}));
  EXPECT_EQ(back[1].tensor.shape(), (Shape{3, 1}));
  EXPECT_EQ(back[1].tensor.to_int_vector(), (std::vector<int32_t>{7, 8, 9}));
  EXPECT_EQ(meta["format"], "pt");
  EXPECT_FALSE(std::filesystem::exists(path + fmt::format(".tmp.{}", ::getpid())));
  std::remove(path.c_str());
}

TEST(Safetensors, ReadsF64AndI64AsPgolfTypes) {
  const std::string path = temp_path("wide.safetensors");
  double d[2] = {0.25, -3.5};
  int64_t i[2] = {-4, 1000};
  std::string data(reinterpret_cast<char*>(d), 16);
  data.append(reinterpret_cast<char*>(i), 16);
  write_raw(path,
            R"({"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"n":{"dtype":"I64","shape":[2],"data_offsets":[16,32]}})",
            data);
  auto t = read_safetensors(path);
  EXPECT_EQ(t[0].tensor.dtype(), DType::F32);
  EXPECT_EQ(t[0].tensor.to_float_vector(), (std::vector<float>{0.25f, -3.5f}));
  EXPECT_EQ(t[1].tensor.to_int_vector(), (std::vector<int32_t>{-4, 1000}));
  std::remove(path.c_str());
}

TEST(Safetensors, CorruptFilesAreRejectedWithTheTensorName) {
  const std::string path = temp_path("bad.safetensors");
  write_raw(path, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(expect_error([&] { read_safetensors(path); }).find("tensor w"), std::string::npos);
  write_raw(path, R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(expect_error([&] { read_safetensors(path); }).find("Q4"), std::string::npos);
  write_raw(path, R"({"w":)", "");
  EXPECT_NE(expect_error([&] { read_safetensors(path); }).find("JSON"), std::string::npos);
  {
    std::ofstream f(path, std::ios::binary);
    f << "\xff\xff\xff\xff\xff\xff\xff\x7f";
  }
  EXPECT_NE(expect_error([&] { read_safetensors(path); }).find("header length"), std::string::npos);
  EXPECT_NE(expect_error([&] { read_safetensors(path + ".missing"); }).find("cannot open"), std::string::npos);
  std::remove(path.c_str());
}

TEST(Safetensors, ParamsRoundTripAndImportValidates) {
  GPT a(testing::tiny_config(), Device::CPU), b(testing::tiny_config(), Device::CPU);
  a.init(1);
  b.init(2);
  const std::string path = temp_path("params.safetensors");
  export_params(a.params(), path);
  import_params(b.params(), path);
  for (size_t i = 0; i < a.params().all().size(); ++i)
    ASSERT_EQ(a.params().all()[i].value.to_float_vector(), b.params().all()[i].value.to_float_vector())
        << a.params().all()[i].spec.name;

  // bf16 export: values come back rounded to bf16.
  export_params(a.params(), path, DType::BF16);
  import_params(b.params(), path);
  auto orig = a.params().get("blocks.0.attn.c_q.weight").value.to_float_vector();
  auto got = b.params().get("blocks.0.attn.c_q.weight").value.to_float_vector();
  for (size_t i = 0; i < orig.size(); ++i) ASSERT_EQ(got[i], bf16_to_f32(f32_to_bf16(orig[i])));

  // A different architecture: the error names the offending tensor.
  ModelConfig wide = testing::tiny_config();
  wide.mlp_mult = 3.f;
  GPT c(wide, Device::CPU);
  std::string err = expect_error([&] { import_params(c.params(), path); });
  EXPECT_NE(err.find("blocks.0.mlp.fc.weight"), std::string::npos) << err;
  ModelConfig deeper = testing::tiny_config();
  deeper.num_layers = 4;
  GPT d(deeper, Device::CPU);
  err = expect_error([&] { import_params(d.params(), path); });
  EXPECT_NE(err.find("skip_weights has shape [1, 32], the model expects [2, 32]"), std::string::npos) << err;
  ModelConfig shallow = testing::tiny_config();
  shallow.num_layers = 2;
  GPT e(shallow, Device::CPU);
  err = expect_error([&] { import_params(e.params(), path); });
  EXPECT_NE(err.find("blocks.2."), std::string::npos) << err;
  EXPECT_NE(err.find("not a parameter"), std::string::npos) << err;

  ParamTable only;
  only.add(ParamSpec{"tok_emb.weight", Shape{32, 32}});
  only.add(ParamSpec{"extra", Shape{4}});
  only.allocate(Device::CPU, DType::F32);
  write_safetensors(path, {{"tok_emb.weight", Tensor::zeros(Shape{32, 32}, DType::F32)}});
  err = expect_error([&] { import_params(only, path); });
  EXPECT_NE(err.find("parameter extra [4] is missing"), std::string::npos) << err;
  write_safetensors(path, {{"tok_emb.weight", Tensor::zeros(Shape{32, 32}, DType::I32)},
                           {"extra", Tensor::zeros(Shape{4}, DType::F32)}});
  err = expect_error([&] { import_params(only, path); });
  EXPECT_NE(err.find("tok_emb.weight is i32[32, 32]"), std::string::npos) << err;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pgolf::model
